/*
 * netvlad-gui map geometry helpers (project code, MIT; not vendored). No Leaflet, no DOM.
 *
 * window.nvGeo.fixAntimeridian(geojson): world-atlas stitches its polygons across the
 * antimeridian (for spherical projections), so a ring may step from 179.9° to -180°. Drawn on
 * a flat (Mercator) map that step becomes a line across the whole world. Rings are cut at
 * ±180° into pieces that each stay in [-180, 180] (rings around a pole are closed along it),
 * and lines are split where they cross. Only fills use the cut rings: the cut edges along
 * ±180° are never stroked, so no fake coastline appears there.
 *
 * window.nvGeo.spread(points, anchors, minGap): screen positions that keep markers apart, and
 * off the marks they would hide (ringRadius: how far such a ring reaches).
 */
(function () {
    "use strict";

    var MAX_MERCATOR_LAT = 85.0511287798;

    function hasJump(coords) {
        for (var i = 1; i < coords.length; i++) {
            if (Math.abs(coords[i][0] - coords[i - 1][0]) > 180) return true;
        }
        return false;
    }

    // Continuous longitudes: each step takes the short way round, so a ring that crosses
    // the antimeridian runs past ±180 instead of jumping back.
    function unwrap(coords) {
        var shift = 0;
        var out = [[coords[0][0], coords[0][1]]];
        for (var i = 1; i < coords.length; i++) {
            var step = coords[i][0] - coords[i - 1][0];
            if (step > 180) shift -= 360;
            else if (step < -180) shift += 360;
            out.push([coords[i][0] + shift, coords[i][1]]);
        }
        return out;
    }

    function crossing(p, q, x) {
        var t = q[0] === p[0] ? 0 : (x - p[0]) / (q[0] - p[0]);
        return [x, p[1] + t * (q[1] - p[1])];
    }

    // One Sutherland-Hodgman pass: the part of a closed ring on one side of the line lon = x.
    function clipSide(ring, x, keepEast) {
        var out = [];
        var n = ring.length;
        for (var i = 0; i < n; i++) {
            var cur = ring[i];
            var prev = ring[(i + n - 1) % n];
            var curIn = keepEast ? cur[0] >= x : cur[0] <= x;
            var prevIn = keepEast ? prev[0] >= x : prev[0] <= x;
            if (curIn) {
                if (!prevIn) out.push(crossing(prev, cur, x));
                out.push(cur);
            } else if (prevIn) {
                out.push(crossing(prev, cur, x));
            }
        }
        return out;
    }

    function ringArea(ring) {
        var a = 0;
        for (var i = 0, n = ring.length; i < n; i++) {
            var p = ring[i];
            var q = ring[(i + 1) % n];
            a += p[0] * q[1] - q[0] * p[1];
        }
        return a / 2;
    }

    function cutRing(ring) {
        if (ring.length < 4 || !hasJump(ring)) return [ring];
        var u = unwrap(ring);
        var first = u[0];
        var last = u[u.length - 1];
        if (Math.abs(last[0] - first[0]) > 180) {
            // The ring goes once round a pole: close it along the pole it encloses.
            var lat = 0;
            u.forEach(function (p) { lat += p[1]; });
            var pole = lat < 0 ? -90 : 90;
            u.push([last[0], pole], [first[0], pole]);
        }
        var lo = Infinity;
        var hi = -Infinity;
        u.forEach(function (p) {
            lo = Math.min(lo, p[0]);
            hi = Math.max(hi, p[0]);
        });
        var pieces = [];
        var kFirst = Math.floor((lo - 180) / 360) + 1;
        var kLast = Math.ceil((hi + 180) / 360) - 1;
        for (var k = kFirst; k <= kLast; k++) {
            var west = -180 + 360 * k;
            var piece = clipSide(clipSide(u, west, true), west + 360, false);
            if (piece.length < 3 || Math.abs(ringArea(piece)) < 1e-12) continue;
            pieces.push(piece.map(function (p) {
                return [p[0] - 360 * k, p[1]];
            }));
        }
        return pieces;
    }

    // A line that crosses the antimeridian ends at the edge and goes on from the other edge.
    function splitLine(line) {
        var parts = [];
        var cur = [line[0]];
        for (var i = 1; i < line.length; i++) {
            var p = line[i - 1];
            var q = line[i];
            var step = q[0] - p[0];
            if (Math.abs(step) > 180) {
                var edge = step > 0 ? -180 : 180; // where p leaves the map
                var c = crossing(p, [q[0] + 2 * edge, q[1]], edge);
                cur.push([edge, c[1]]);
                parts.push(cur);
                cur = [[-edge, c[1]], q];
            } else {
                cur.push(q);
            }
        }
        parts.push(cur);
        // Lines along the pole lie outside the Mercator world and would show at its edge.
        return parts.filter(function (part) {
            return part.length >= 2 && part.some(function (pt) {
                return Math.abs(pt[1]) < MAX_MERCATOR_LAT;
            });
        });
    }

    function fixGeometry(geom) {
        if (!geom) return geom;
        if (geom.type === "Polygon" || geom.type === "MultiPolygon") {
            var polygons = geom.type === "Polygon" ? [geom.coordinates] : geom.coordinates;
            var out = polygons.map(function (rings) {
                // The canvas fills with the even-odd rule, so pieces of holes stay holes.
                return rings.reduce(function (acc, ring) {
                    return acc.concat(cutRing(ring));
                }, []);
            }).filter(function (rings) { return rings.length; });
            return { type: "MultiPolygon", coordinates: out };
        }
        if (geom.type === "LineString" || geom.type === "MultiLineString") {
            var lines = geom.type === "LineString" ? [geom.coordinates] : geom.coordinates;
            return {
                type: "MultiLineString",
                coordinates: lines.reduce(function (acc, line) {
                    return acc.concat(splitLine(line));
                }, []),
            };
        }
        return geom;
    }

    function fixAntimeridian(geojson) {
        if (!geojson) return geojson;
        if (geojson.type === "FeatureCollection") {
            geojson.features.forEach(function (f) { f.geometry = fixGeometry(f.geometry); });
            return geojson;
        }
        if (geojson.type === "Feature") {
            geojson.geometry = fixGeometry(geojson.geometry);
            return geojson;
        }
        return fixGeometry(geojson);
    }

    /*
     * Spread markers that would overlap on screen, like markercluster's spiderfy but always on.
     * points: [{x, y}] in pixels; anchors: [{x, y, clear}] fixed marks (the predicted position,
     * the photo's own GPS) that markers must not hide. Markers closer than minGap (chained)
     * form a group; every marker within minGap of an anchor, or within its ``clear`` radius
     * (the uncertainty circle, a mark beside it), joins that anchor's group. A group of two or
     * more, or one that holds an anchor, is laid on a circle (a spiral when large) round its
     * first anchor, at least ``clear`` px out, else round its own centre. Returns [{x, y}] per
     * point.
     */
    function spread(points, anchors, minGap) {
        anchors = anchors || [];
        var n = points.length;
        // Union-find over the points, then one node per anchor: all that touch an anchor share
        // one ring (two rings round one anchor would put markers on the same spots).
        var parent = [];
        for (var p = 0; p < n + anchors.length; p++) parent.push(p);
        function find(i) {
            while (parent[i] !== i) i = parent[i] = parent[parent[i]];
            return i;
        }
        function near(a, b, gap) {
            return Math.abs(a.x - b.x) < gap && Math.abs(a.y - b.y) < gap &&
                Math.hypot(a.x - b.x, a.y - b.y) < gap;
        }
        for (var i = 0; i < n; i++) {
            for (var j = i + 1; j < n; j++) {
                if (near(points[i], points[j], minGap)) parent[find(i)] = find(j);
            }
            for (var a = 0; a < anchors.length; a++) {
                var reach = Math.max(minGap, num(anchors[a].clear));
                if (near(points[i], anchors[a], reach)) parent[find(i)] = find(n + a);
            }
        }
        var groups = {};
        for (var m = 0; m < n; m++) (groups[find(m)] = groups[find(m)] || []).push(m);
        var out = points.map(function (pt) { return { x: pt.x, y: pt.y }; });
        Object.keys(groups).forEach(function (key) {
            var members = groups[key];
            var anchor = null;
            for (var k = 0; k < anchors.length && anchor === null; k++) {
                if (find(n + k) === find(members[0])) anchor = anchors[k];
            }
            if (members.length < 2 && !anchor) return;
            var cx = 0;
            var cy = 0;
            members.forEach(function (idx) { cx += points[idx].x; cy += points[idx].y; });
            var centre = anchor || { x: cx / members.length, y: cy / members.length };
            ring(members.length, minGap, anchor ? num(anchor.clear) : 0).forEach(
                function (offset, idx) {
                    out[members[idx]] = { x: centre.x + offset.x, y: centre.y + offset.y };
                }
            );
        });
        return out;
    }

    function num(value) {
        var x = Number(value);
        return isFinite(x) && x > 0 ? x : 0;
    }

    // Offsets for count markers: a circle (first at the top, clockwise), a spiral past 9; at
    // least ``clear`` px from the centre.
    function ring(count, gap, clear) {
        clear = num(clear);
        var offsets = [];
        if (count <= 9) {
            var radius = Math.max(gap, (gap * 1.15 * count) / (2 * Math.PI), clear);
            for (var i = 0; i < count; i++) {
                var angle = -Math.PI / 2 + (2 * Math.PI * i) / count;
                offsets.push({ x: radius * Math.cos(angle), y: radius * Math.sin(angle) });
            }
            return offsets;
        }
        // An Archimedean spiral: turns gap apart, markers gap apart along it.
        var step = gap * 1.1;
        var b = step / (2 * Math.PI);
        var theta = (2 * Math.PI * gap) / step;
        var extra = Math.max(0, clear - b * theta);
        for (var s = 0; s < count; s++) {
            var r = b * theta + extra;
            offsets.push({ x: r * Math.cos(theta), y: r * Math.sin(theta) });
            theta += step / r;
        }
        return offsets;
    }

    // How far from its centre a ring of count markers reaches (to the markers' centres).
    function ringRadius(count, gap, clear) {
        return ring(count, gap, clear).reduce(function (most, o) {
            return Math.max(most, Math.hypot(o.x, o.y));
        }, 0);
    }

    window.nvGeo = {
        fixAntimeridian: fixAntimeridian,
        cutRing: cutRing,
        splitLine: splitLine,
        spread: spread,
        ring: ring,
        ringRadius: ringRadius,
    };
})();
