"""What comes in from outside: the webhook receiver (receiver.py) that turns registry and forge deliveries,
authenticated before anything is parsed beyond size, into promote-rc runs and pull-request resumes. The command
line (``promote receive``) and the ``receiver`` deployment (flows/receiver.py) both run it."""
