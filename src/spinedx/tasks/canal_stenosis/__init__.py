"""Central canal stenosis per disc, from a crop of the disc's posterior margin and the canal behind it."""
