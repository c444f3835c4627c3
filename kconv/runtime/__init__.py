"""The torch code kconv ships inside model.py, as real, importable, tested code.

One module per layer family; each imports only torch. The emitter copies the source of exactly the
classes and functions a model uses, and of what they use in turn (kconv.codecopy), into model.py,
which therefore still imports only torch. Importing this package imports nothing; import a family
module (``kconv.runtime.recurrent``) to use its classes directly.
"""
