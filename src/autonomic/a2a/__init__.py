"""The A2A protocol: serve agents to A2A peers (``a2a.server.a2a_router``, needs
``autonomic[server]``), and call a remote A2A agent as a tool (``a2a.client.a2a_tool``)."""

__all__: list[str] = []
