"""The bottom layer: errors, atomic io, progress bars and the small types that harness/, trainers/ and tasks/
share. It imports none of them."""
