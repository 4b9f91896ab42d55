"""The child runtime: what runs inside ``pipekit worker TARGET``.

``runtime`` claims the channel and runs the target; ``targets`` loads and checks it;
``stream`` and ``items`` are the two run modes; ``bridge`` joins the framed pipe to the
worker thread; ``signals`` stops the process on SIGTERM or when its parent dies;
``outcome`` holds the exit codes and how a failure is reported. :mod:`pipekit.child` is
the public face of this package inside a worker.
"""
