"""On the device, with the bundle: ``build`` (TensorRT engines), ``verify``, ``bench``, ``predict``, ``doctor``,
and the bundle's format. Device side: no torch; imports only core, data, runtime, evaluate and report."""
