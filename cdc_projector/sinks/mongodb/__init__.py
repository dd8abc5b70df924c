"""sinks/mongodb"""
