"""The proxy: where a REST call to ``/{edge}/{plugin}/{route}`` goes, and the answers the bridge gives itself."""
