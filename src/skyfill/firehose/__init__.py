"""The firehose consumer: replays and follows a host's event stream into the sinks."""
