"""Front-end jobs: reports and plots run from the CLI; they import the library, never the other
way round.

* ``mbjax.jobs.diagnostics``: model diagnostics (``DiagnosticsConfig``, ``run_diagnostics``,
  ``write_report``).
"""
