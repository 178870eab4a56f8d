"""Pydantic request (``XCreate``, ``XUpdate``) and response (``XRead``) models of API v1."""
