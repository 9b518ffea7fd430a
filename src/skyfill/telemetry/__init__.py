"""What the lower layers record for someone to watch: latency histograms and the log
context. Nothing here shows anything; `monitor` presents it."""
