"""The web console (``duckserve ui``): models, services, logs, metrics, pools, repositories and a
worksheet, in a browser.

A front door like the others: a signed-in console session is an ordinary duckserve connection
(``duckserve.connect``) as the signed-in user and role, and every page and every action is a SQL
statement run through it, so what a page shows and what an action may do are decided by the same
grants, and fail with the same messages, as in SQL. The front end is built from ``web/`` into
``static/`` (committed: running the console needs no Node.js).
"""
