"""The sections of ``scripts/benchmark.py`` (its docstring says what each measures): ``inference``,
``training``, ``pipeline`` (data), ``evaluation``, ``stats``; ``common`` holds what several share.
"""
