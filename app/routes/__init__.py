"""HTTP routes: thin, they parse, call one service function and return."""
