"""initlab's bench: real data that works offline, a small model zoo, and the experiment runner.

Import the pieces you need (``initlab.bench.data``, ``initlab.bench.models``); this package
imports nothing heavy by itself, and the data packages are an optional extra
(``pip install 'initlab[data]'``).
"""
