"""The results report: static HTML pages of what the steps wrote (tables, figures, run records) under
`data/reports/`, and the README's results table printed from the same files. An application on top of the task
modules, like the step scripts: no task module imports it."""
