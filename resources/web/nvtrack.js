/*
 * netvlad-gui map: the predicted track of photos located together (project code, MIT; not
 * vendored). Loaded after Leaflet and before nvmap.js, which owns it through
 * window.nvTrack.create(map, onClick).
 *
 * A track is the places decided for one walk's photos, in capture order: a line through them
 * and a point per photo, numbered by its position in the walk. Photos a few metres apart are a
 * few pixels apart at street zoom, so numbers go only where they fit (the photo on show first,
 * then the first and last, then in order) and the other photos are small dots; the numbers are
 * laid out again at each zoom. The photo on show is a ring round the predicted pin with its
 * number beside it. Labels reach the DOM as textContent only.
 */
(function () {
    "use strict";

    var LABEL_GAP = 22; // px between the centres of numbered points (18 px wide)
    var STEP = 18; // px, a numbered point
    var DOT = 9; // px, a point whose number does not fit
    var RING = 34; // px, the ring round the photo on show (the predicted pin is 22 px)

    function el(tag, className, text) {
        var node = document.createElement(tag);
        if (className) node.className = className;
        if (text !== undefined && text !== null) node.textContent = String(text);
        return node;
    }

    function toLatLng(lat, lon) {
        if (lat === null || lon === null || lat === undefined || lon === undefined) return null;
        lat = Number(lat);
        lon = Number(lon);
        if (!isFinite(lat) || !isFinite(lon)) return null;
        if (Math.abs(lat) > 90 || Math.abs(lon) > 180) return null;
        return L.latLng(lat, lon);
    }

    function icon(point) {
        var size = point.current ? RING : point.numbered ? STEP : DOT;
        var kind = point.current ? "nv-step nv-current"
            : point.numbered ? "nv-step" : "nv-step nv-dot";
        var node = el("div", kind);
        if (point.current || point.numbered) node.appendChild(el("span", null, point.number));
        return L.divIcon({
            className: "",
            html: node,
            iconSize: [size, size],
            iconAnchor: [size / 2, size / 2],
            tooltipAnchor: [size / 2, 0],
        });
    }

    function tooltip(point) {
        var box = el("div", "nv-popup");
        var head = point.current ? "This photo, " : "Photo ";
        box.appendChild(el("div", "nv-title", head + point.number + " of the walk"));
        box.appendChild(el("div", "nv-meta", point.label));
        if (point.support) box.appendChild(el("div", "nv-meta", point.support));
        if (!point.current) box.appendChild(el("div", "nv-meta", "click to show it"));
        return box;
    }

    function create(map, onClick) {
        var layer = L.featureGroup().addTo(map);
        var points = [];

        function clear() {
            layer.clearLayers();
            points = [];
        }

        function show(data) {
            clear();
            ((data && data.points) || []).forEach(function (p) {
                var ll = toLatLng(p.lat, p.lon);
                var token = parseInt(p.token, 10);
                if (!ll || !isFinite(token)) return;
                var number = parseInt(p.number, 10);
                points.push({
                    token: token,
                    number: isFinite(number) ? number : points.length + 1,
                    ll: ll,
                    current: p.current === true,
                    fit: p.fit === true,
                    label: String(p.label === undefined || p.label === null ? "" : p.label),
                    support: String(p.support || ""),
                    numbered: null,
                });
            });
            if (points.length >= 2) {
                L.polyline(points.map(function (p) { return p.ll; }), {
                    color: "#6a3d9a", weight: 3, opacity: 0.75, interactive: false,
                    lineJoin: "round",
                }).addTo(layer);
            }
            points.forEach(function (p) {
                var marker = L.marker(p.ll, {
                    icon: icon(p),
                    // over the library's photos (0), under the matches (1000 - rank) and the
                    // predicted pin (2000) that the ring goes round
                    zIndexOffset: p.current ? 900 : 100,
                    keyboard: false,
                    riseOnHover: !p.current,
                });
                marker.bindTooltip(function () { return tooltip(p); });
                marker.on("click", function () { onClick(p.token); });
                marker.addTo(layer);
                p.marker = marker;
            });
            layout();
            return points.length;
        }

        // Numbers where they do not cover each other at this zoom; the rest are dots.
        function layout() {
            if (!points.length) return;
            var last = points.length - 1;
            var order = points.filter(function (p) { return p.current; })
                .concat([points[0], points[last]])
                .concat(points);
            var placed = [];
            var done = {};
            order.forEach(function (p) {
                if (done[p.token]) return;
                done[p.token] = true;
                var xy = map.latLngToLayerPoint(p.ll);
                var free = placed.every(function (q) { return q.distanceTo(xy) >= LABEL_GAP; });
                var numbered = p.current || free;
                if (numbered) placed.push(xy);
                if (p.numbered !== numbered) {
                    p.numbered = numbered;
                    p.marker.setIcon(icon(p));
                    // a number over the dots of photos placed at the same spot, not under
                    if (!p.current) p.marker.setZIndexOffset(numbered ? 150 : 100);
                }
            });
        }

        // Where the view should reach when the photo on show is fitted: its near neighbours.
        function fitBounds() {
            var bounds = L.latLngBounds([]);
            points.forEach(function (p) { if (p.fit || p.current) bounds.extend(p.ll); });
            return bounds;
        }

        function count() {
            var current = points.filter(function (p) { return p.current; });
            return {
                points: points.length,
                numbered: points.filter(function (p) { return p.numbered; }).length,
                current: current.length ? current[0].token : null,
                order: points.map(function (p) { return p.number; }),
                tokens: points.map(function (p) { return p.token; }),
            };
        }

        function marker(token) {
            var found = points.filter(function (p) { return p.token === Number(token); });
            return found.length ? found[0].marker : null;
        }

        map.on("zoomend", layout);
        return { show: show, clear: clear, layout: layout, fitBounds: fitBounds, count: count,
            marker: marker, size: function () { return points.length; } };
    }

    window.nvTrack = { create: create };
})();
