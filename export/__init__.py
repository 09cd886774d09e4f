"""ONNX export of the controller and the generator (see DESIGN.md sections 2, 6, 9).

Graphs always trace the torch references in `otavatar.kernels.reference`.
"""
