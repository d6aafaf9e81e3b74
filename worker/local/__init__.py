"""Local tools, not run by the Fargate task: the demo, the AWS emulator, the benchmark, the load and
fault suite, and the sample reports they send. The production path is the rest of ``worker/``."""
