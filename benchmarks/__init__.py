"""Side-by-side measurements of OpenRTC against plain livekit-agents workers.

``python -m benchmarks.density`` is the entry point; see benchmarks/README.md.
"""
