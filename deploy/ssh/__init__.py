"""Code that runs here, on the controller, and acts on the hosts over SSH (servertool/ is what
runs on the hosts themselves)."""
