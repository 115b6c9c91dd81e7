"""openrtc-deploy: blue-green deploys of an OpenRTC pool with no call cut.

Installed, ``openrtc start TARGET`` runs a controller: each generation of workers is a fresh
``openrtc start`` of the code on disk, under openrtc-workers' supervisor. ``openrtc deploy``
(over a local control socket) or SIGHUP starts the next one; once every one of its workers
is registered with LiveKit it takes the calls and the previous generation drains, each call
kept to its natural end. See docs/deploying.md.

This package's top level imports nothing heavy: ``python -m openrtc_deploy.probe`` (a
Kubernetes probe) loads only the standard library.
"""
