"""Alembic's script folder for the metadata database: env.py, script.py.mako and versions/.

Run through shared.metadata.migrate (there is no alembic.ini); nothing here is imported
by the application itself.
"""
