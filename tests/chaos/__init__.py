"""Randomized fault campaigns with a Jepsen-style history checker (issue 7); see campaign.py."""
