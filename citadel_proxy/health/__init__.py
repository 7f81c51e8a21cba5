"""`citadel-proxy health`: the specification's health report, for operators and the systemd timer."""
