"""sources/debezium"""
