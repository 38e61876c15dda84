"""The RentVine domain: events, workflows and their steps, the RentVine API client, the intake app."""
