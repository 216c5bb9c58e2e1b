"""A server that speaks Snowflake's REST protocol, so Snowflake's own drivers (the Python
connector, snowflake-sqlalchemy, JDBC) reach duckserve with only their connection settings changed.

``duckserve server`` runs it (``duckserve.fronts.snowflake.server``); ``app`` holds the endpoints,
``sessions`` the logged-in clients and their queries, ``auth`` the credentials, ``results`` the
Arrow form of results, ``bindings`` bind variables and ``protocol`` the shapes of the answers.
"""
