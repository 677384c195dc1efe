"""The Kafka wire codec: frames, headers, requests, responses, record batch headers. No I/O."""
