"""The API's routes, one module per resource; no SQL here beyond a query function's call."""
