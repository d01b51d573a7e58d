"""Student design: units, device profiles, the analytic cost model, the designer, and a
speed measurement. `designer.design(teacher_spec, constraints)` picks the largest student
of the teacher's family that fits a device's storage, training RAM and latency budget."""
