"""The unified API's webhooks: the receiver, its sockets, and acting on what it keeps."""
