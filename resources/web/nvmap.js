/*
 * netvlad-gui map page logic (project code, MIT; not vendored).
 *
 * Loaded after Leaflet, leaflet.markercluster and topojson-client. The page calls
 * nvInit(map, config) once; Python then drives window.nv through runJavaScript.
 * Every string that may come from a file name or EXIF reaches the DOM through
 * textContent or an attribute setter; no label is ever parsed as HTML.
 */
(function () {
    "use strict";

    var WORLD_VIEW = { center: [20, 0], zoom: 2 };
    var FIT_OPTIONS = { maxZoom: 17, padding: [24, 24] };

    var state = {
        map: null,
        base: null,
        baseFeatures: 0,
        refs: null,
        result: null,
        matches: {},
        prediction: null,
        truth: null,
        selected: null,
    };

    // ---- small helpers -------------------------------------------------------------------

    function el(tag, className, text) {
        var node = document.createElement(tag);
        if (className) node.className = className;
        if (text !== undefined && text !== null) node.textContent = String(text);
        return node;
    }

    function num(value) {
        if (value === null || value === undefined || value === "") return null;
        var n = Number(value);
        return isFinite(n) ? n : null;
    }

    function toLatLng(lat, lon) {
        lat = num(lat);
        lon = num(lon);
        if (lat === null || lon === null || Math.abs(lat) > 90 || Math.abs(lon) > 180) return null;
        return L.latLng(lat, lon);
    }

    function fmtDistance(m) {
        m = num(m);
        if (m === null) return "?";
        if (m < 1000) return Math.round(m) + " m";
        return (m / 1000).toFixed(m < 10000 ? 2 : 1) + " km";
    }

    function fmtScore(s) {
        s = num(s);
        return s === null ? "?" : s.toFixed(3);
    }

    // Thumbnails are local files or data URLs made by the app; refuse script-capable schemes.
    var SAFE_SCHEMES = { "file:": 1, "data:": 1, "blob:": 1, "qrc:": 1, "http:": 1, "https:": 1 };

    function safeUrl(value) {
        if (typeof value !== "string" || value === "") return null;
        try {
            var url = new URL(value, document.baseURI);
            return SAFE_SCHEMES[url.protocol] ? url.href : null;
        } catch (e) {
            return null;
        }
    }

    function textIcon(className, text, size) {
        var content = el("span", null, text);
        return L.divIcon({
            className: "",
            html: wrap(className, content),
            iconSize: [size, size],
            iconAnchor: [size / 2, size / 2],
            popupAnchor: [0, -size / 2],
            tooltipAnchor: [size / 2, 0],
        });
    }

    function wrap(className, child) {
        var node = el("div", className);
        if (child) node.appendChild(child);
        return node;
    }

    function notifyClick(rank) {
        var bridge = window.nvBridge;
        if (bridge && typeof bridge.matchClicked === "function") bridge.matchClicked(rank);
    }

    // ---- offline base layer ----------------------------------------------------------------

    function drawBase(map, topo) {
        if (!topo || !topo.objects || !topo.objects.countries || typeof topojson === "undefined") {
            return null;
        }
        var pane = map.createPane("nvBase");
        pane.style.zIndex = 150; // under the tile pane (200): online tiles hide it when they load
        pane.style.pointerEvents = "none";
        var renderer = L.canvas({ pane: "nvBase", padding: 0.5 });
        var countries = topojson.feature(topo, topo.objects.countries);
        var borders = topojson.mesh(topo, topo.objects.countries, function (a, b) {
            return a !== b;
        });
        var coast = topojson.mesh(topo, topo.objects.countries, function (a, b) {
            return a === b;
        });
        var common = { pane: "nvBase", renderer: renderer, interactive: false };
        var land = L.geoJSON(countries, Object.assign({}, common, {
            style: { stroke: false, fill: true, fillColor: "#f2efe9", fillOpacity: 1 },
        }));
        var borderLayer = L.geoJSON(borders, Object.assign({}, common, {
            style: { color: "#9a8c98", weight: 0.8, dashArray: "4 3", fill: false },
        }));
        var coastLayer = L.geoJSON(coast, Object.assign({}, common, {
            style: { color: "#5b7f95", weight: 1, fill: false },
        }));
        state.baseFeatures = countries.features.length;
        return L.layerGroup([land, borderLayer, coastLayer]).addTo(map);
    }

    // ---- references ------------------------------------------------------------------------

    var refIcon = null;

    function setReferences(list) {
        state.refs.clearLayers();
        if (!refIcon) {
            refIcon = L.divIcon({ className: "nv-ref", iconSize: [10, 10], iconAnchor: [5, 5] });
        }
        var markers = [];
        (list || []).forEach(function (ref) {
            var ll = toLatLng(ref.lat, ref.lon);
            if (!ll) return;
            var marker = L.marker(ll, { icon: refIcon, keyboard: false });
            var label = ref.label === undefined || ref.label === null ? ref.id : ref.label;
            marker.bindTooltip(function () {
                return el("span", null, label);
            });
            marker.nvId = ref.id;
            markers.push(marker);
        });
        state.refs.addLayers(markers);
        return markers.length;
    }

    // ---- result ----------------------------------------------------------------------------

    function matchPopup(match, rank) {
        var box = el("div", "nv-popup");
        var src = safeUrl(match.thumb_url);
        if (src) {
            var img = el("img", "nv-thumb");
            img.setAttribute("alt", String(match.label || ""));
            img.setAttribute("src", src);
            box.appendChild(img);
        }
        box.appendChild(el("div", "nv-title", "#" + rank + " " + (match.label || match.id || "")));
        box.appendChild(el("div", "nv-meta", "score " + fmtScore(match.score)));
        box.appendChild(el("div", "nv-meta", "distance " + fmtDistance(match.distance_m)));
        return box;
    }

    function predictionTooltip(query) {
        var box = el("div", "nv-popup");
        box.appendChild(el("div", "nv-title", "Predicted: " + (query.label || "query")));
        var conf = num(query.confidence);
        if (conf !== null) {
            box.appendChild(el("div", "nv-meta", "confidence " + Math.round(conf * 100) + "%"));
        }
        var radius = num(query.radius_m);
        if (radius !== null) box.appendChild(el("div", "nv-meta", "radius " + fmtDistance(radius)));
        return box;
    }

    function clearResult() {
        state.result.clearLayers();
        state.matches = {};
        state.prediction = null;
        state.truth = null;
        state.selected = null;
    }

    function showResult(data) {
        clearResult();
        data = data || {};
        var query = data.query || {};
        var predicted = toLatLng(query.lat, query.lon);
        if (predicted) {
            var radius = num(query.radius_m);
            if (radius !== null && radius > 0) {
                L.circle(predicted, {
                    radius: radius, color: "#d7301f", weight: 1, fillOpacity: 0.12,
                    interactive: false,
                }).addTo(state.result);
            }
            var predIcon = L.divIcon({
                className: "", html: wrap("nv-pred"), iconSize: [22, 22], iconAnchor: [11, 11],
                tooltipAnchor: [11, 0],
            });
            state.prediction = L.marker(predicted, { icon: predIcon, zIndexOffset: 2000 })
                .bindTooltip(function () { return predictionTooltip(query); })
                .addTo(state.result);
        }
        (data.matches || []).forEach(function (match, i) {
            var ll = toLatLng(match.lat, match.lon);
            if (!ll) return;
            var rank = parseInt(match.rank, 10);
            if (!isFinite(rank)) rank = i + 1;
            var marker = L.marker(ll, {
                icon: textIcon("nv-match", String(rank), 24),
                zIndexOffset: 1000 - rank,
                riseOnHover: true,
            });
            marker.nvRank = rank;
            marker.bindPopup(function () { return matchPopup(match, rank); }, { maxWidth: 260 });
            marker.on("click", function () {
                highlight(rank);
                notifyClick(rank);
            });
            marker.addTo(state.result);
            state.matches[rank] = marker;
        });
        var truth = toLatLng(query.true_lat, query.true_lon);
        if (truth) {
            var truthIcon = L.divIcon({
                className: "", html: wrap("nv-truth"), iconSize: [18, 18], iconAnchor: [9, 9],
                tooltipAnchor: [9, 0],
            });
            var truthText = "True location";
            if (num(query.error_m) !== null) {
                truthText += " (error " + fmtDistance(query.error_m) + ")";
            }
            state.truth = L.marker(truth, { icon: truthIcon, zIndexOffset: 1500 })
                .bindTooltip(function () { return el("span", null, truthText); })
                .addTo(state.result);
            if (predicted) {
                L.polyline([predicted, truth], {
                    color: "#d7301f", weight: 2, dashArray: "6 4", interactive: true,
                }).bindTooltip(function () {
                    return el("span", null, "error " + fmtDistance(query.error_m));
                }, { sticky: true }).addTo(state.result);
            }
        }
        if (state.result.getLayers().length) {
            state.map.fitBounds(state.result.getBounds(), FIT_OPTIONS);
        }
        return count();
    }

    function highlight(rank) {
        var previous = state.matches[state.selected];
        if (previous) {
            var oldIcon = previous.getElement();
            if (oldIcon && oldIcon.firstChild) oldIcon.firstChild.classList.remove("nv-selected");
            previous.setZIndexOffset(1000 - previous.nvRank);
        }
        var marker = state.matches[rank];
        state.selected = marker ? rank : null;
        if (!marker) return null;
        var icon = marker.getElement();
        if (icon && icon.firstChild) icon.firstChild.classList.add("nv-selected");
        marker.setZIndexOffset(3000);
        return marker;
    }

    function select(rank) {
        var marker = highlight(parseInt(rank, 10));
        if (!marker) return false;
        var where = marker.getLatLng();
        if (!state.map.getBounds().contains(where)) state.map.panTo(where);
        marker.openPopup();
        return true;
    }

    function clear(options) {
        clearResult();
        if (options && options.references) state.refs.clearLayers();
        return count();
    }

    function fitAll() {
        var bounds = L.latLngBounds([]);
        if (state.refs.getLayers().length) bounds.extend(state.refs.getBounds());
        if (state.result.getLayers().length) bounds.extend(state.result.getBounds());
        if (bounds.isValid()) state.map.fitBounds(bounds, FIT_OPTIONS);
        else state.map.setView(WORLD_VIEW.center, WORLD_VIEW.zoom);
    }

    function count() {
        return {
            references: state.refs.getLayers().length,
            matches: Object.keys(state.matches).length,
            truth: state.truth ? 1 : 0,
            prediction: state.prediction ? 1 : 0,
            base: state.baseFeatures,
            selected: state.selected,
        };
    }

    // ---- start-up --------------------------------------------------------------------------

    function connectBridge() {
        // qwebchannel.js comes from Qt's own resources; in a plain browser it is simply absent.
        var transport = typeof qt === "undefined" ? null : qt.webChannelTransport;
        if (typeof QWebChannel === "undefined" || !transport) return;
        new QWebChannel(transport, function (channel) {
            window.nvBridge = channel.objects.nvBridge || null;
            if (window.nvBridge && typeof window.nvBridge.pageReady === "function") {
                window.nvBridge.pageReady();
            }
        });
    }

    function init(map, config) {
        config = config || {};
        state.map = map;
        map.setMinZoom(1);
        map.setMaxZoom(19);
        state.base = drawBase(map, window.nvWorld);
        var overlays = {};
        if (state.base) overlays["Offline outline map"] = state.base;
        if (config.tiles_online && config.tile_url) {
            // The browser engine sends the app's User-Agent (set on the Qt profile) with each tile.
            var tiles = L.tileLayer(config.tile_url, {
                attribution: config.attribution || "",
                maxZoom: 19,
            }).addTo(map);
            overlays["Online map tiles"] = tiles;
            L.control.layers(null, overlays, { collapsed: true }).addTo(map);
        }
        state.refs = L.markerClusterGroup({
            // One synchronous add: the page has its own renderer process, so a big library
            // stalls only the map for a moment, and counts are exact when setReferences returns.
            chunkedLoading: false,
            showCoverageOnHover: false,
            maxClusterRadius: 40,
        }).addTo(map);
        state.result = L.featureGroup().addTo(map);
        window.nv = {
            setReferences: setReferences,
            showResult: showResult,
            select: select,
            clear: clear,
            fitAll: fitAll,
            count: count,
            // For tests and debugging: the live Leaflet objects.
            matchMarker: function (rank) { return state.matches[rank] || null; },
            layers: function () {
                return {
                    map: state.map, base: state.base, references: state.refs,
                    result: state.result, prediction: state.prediction, truth: state.truth,
                };
            },
        };
        window.nvReady = true;
        connectBridge();
    }

    window.nvInit = init;
})();
