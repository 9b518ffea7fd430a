"""Labels: following labelers' `com.atproto.label.subscribeLabels` streams into a sink,
every label's signature checked against its labeler's `#atproto_label` key."""
