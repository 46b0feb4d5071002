"""Running avf's measurements on another machine (a Jetson, a GPU server) over SSH.

``ssh`` is the transport (the system OpenSSH client, so the user's keys, agent, ``ProxyJump`` and
``ControlMaster`` settings apply as in every other tool); ``agent`` is what runs on the device, from a
runtime-only install (no PyTorch).
"""
