"""`cctv swarmwatch`: the one container with the manager's Docker socket; it publishes a
read-only snapshot of nodes, services and tasks into Redis for the dashboard."""
