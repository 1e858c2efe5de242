"""What the machine or pod a step runs on gives it: its CPU quota and its credentials."""
