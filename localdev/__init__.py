"""Local development infrastructure (the Azure twin and the local Durable host). Never deployed."""
