"""The anime web app (FastAPI + Jinja2, pages rendered on the server): search, favourites and recommendations,
characters and tags of an uploaded image, and the results report. It calls the task modules' functions, the same
ones as the command-line scripts; no task module imports it."""
