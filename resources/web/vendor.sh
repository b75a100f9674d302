#!/usr/bin/env bash
# Re-vendor the map page's web assets from the npm registry (see VENDORED.md).
# Usage: bash resources/web/vendor.sh   (needs node/npm; writes next to this script)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LEAFLET=leaflet@1.9.4
CLUSTER=leaflet.markercluster@1.5.3
TOPOJSON=topojson-client@3.1.0
ATLAS=world-atlas@2.0.2

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"
for spec in "$LEAFLET" "$CLUSTER" "$TOPOJSON" "$ATLAS"; do
    name="${spec%@*}"
    mkdir -p "$name"
    tarball="$(npm pack --silent "$spec")"
    tar -xzf "$tarball" -C "$name" --strip-components=1
done

mkdir -p "$HERE/images" "$HERE/licenses"
cp leaflet/dist/leaflet.js leaflet/dist/leaflet.css "$HERE/"
cp leaflet/dist/images/*.png "$HERE/images/"
cp leaflet/LICENSE "$HERE/licenses/leaflet-LICENSE"
cp leaflet.markercluster/dist/leaflet.markercluster.js \
   leaflet.markercluster/dist/MarkerCluster.css \
   leaflet.markercluster/dist/MarkerCluster.Default.css "$HERE/"
cp leaflet.markercluster/MIT-LICENCE.txt "$HERE/licenses/leaflet.markercluster-LICENSE"
cp topojson-client/dist/topojson-client.min.js "$HERE/"
cp topojson-client/LICENSE "$HERE/licenses/topojson-client-LICENSE"
cp world-atlas/countries-50m.json "$HERE/"
cp world-atlas/LICENSE "$HERE/licenses/world-atlas-LICENSE"
chmod 644 "$HERE"/*.js "$HERE"/*.css "$HERE"/*.json "$HERE"/images/* "$HERE"/licenses/*
echo "vendored into $HERE"
