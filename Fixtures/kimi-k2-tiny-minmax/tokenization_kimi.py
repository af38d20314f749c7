# Stand-in for tokenization_kimi.py of the real checkpoint (test fixture).
# Not executable model code.
