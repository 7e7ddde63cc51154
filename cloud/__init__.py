"""iotfl's cloud aggregator: FastAPI over SQLite/PostgreSQL, global FedAvg, evaluation, REST status, dashboard.

Entry points: ``cloud.settings.CloudSettings``, ``cloud.app.create_app(settings, dataset)`` and
``cloud.server.serve(settings, dataset)`` (``cloud.server.running`` serves from a thread). No torch here.
"""
