"""The event stream of a host (`com.atproto.sync.subscribeRepos`): frames, commit checks, client."""
