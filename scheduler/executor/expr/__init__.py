"""The ``${{ }}`` expression language, in parts: lexer, parser, values, functions, evaluator.

The public names live in :mod:`scheduler.executor.expressions`; import from there.
"""
