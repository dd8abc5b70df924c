"""MongoDB document sink (works with FerretDB v1 and MongoDB); registers ``type: mongodb``."""
from .sink import MongoDeadLetters, MongoProjectionTarget, MongoSink, MongoStateStore, document_id

__all__ = ["MongoSink", "MongoProjectionTarget", "MongoStateStore", "MongoDeadLetters", "document_id"]
