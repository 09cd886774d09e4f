"""Set before grpcio is first imported (otavatar.server and otavatar.client import this first).

grpcio 1.81+ restarts its epoll poller in a forked child; `subprocess.Popen(close_fds=True)` closes that fd
before exec, the child dies with EBADF and the parent sees a broken pipe (grpc/grpc#43055). Writing an mp4 with
imageio-ffmpeg (otavatar.media) in a process that has used gRPC then fails. otavatar never forks a process that
uses gRPC, so its fork handlers buy nothing: switch them off unless the user chose otherwise.
"""
import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
