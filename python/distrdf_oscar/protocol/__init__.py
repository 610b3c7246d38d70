"""The protocol the client and the functions share through object storage: keys (``layout``),
messages, plans, signatures, partial-result files, leases, job records, the datasets' wire form,
storage access, and the ``contract`` of names the functions, the deployment and the emulator agree
on. It imports no other layer."""
