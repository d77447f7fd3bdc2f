"""The application: the ``ulcmod`` command (``cli``), its ``discover`` and ``analyze`` commands as
sequences of stages, their figures (``plots``) and reports."""
