"""The dashboard's static assets (HTML, JavaScript, CSS), served at ``/dashboard/``.

Hand-written, with no build step and no third-party code: the page reads the public v1 API with
the API key typed into it and draws its charts as inline SVG.
"""
