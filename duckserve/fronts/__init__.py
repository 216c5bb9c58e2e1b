"""Network front doors: protocols other programs speak, translated into duckserve sessions.

Each door ends in the same session, grants and statement executor as a local connection
(``duckserve.connect``); a door translates a protocol and owns no rules of its own.
"""
