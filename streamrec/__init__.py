"""streamrec: a streaming, real-time recommendation pipeline on Kafka and Faust."""

__version__ = "0.1.0"
