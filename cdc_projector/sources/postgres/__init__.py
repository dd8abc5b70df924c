"""sources/postgres"""
