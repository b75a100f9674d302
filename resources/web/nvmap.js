/*
 * netvlad-gui map page logic (project code, MIT; not vendored).
 *
 * Loaded after Leaflet, leaflet.markercluster, topojson-client, nvgeo.js and nvcontrols.js.
 * The page calls
 * nvInit(map, config) once; Python then drives window.nv through runJavaScript.
 * Every string that may come from a file name or EXIF reaches the DOM through
 * textContent or an attribute setter; no label is ever parsed as HTML.
 */
(function () {
    "use strict";

    var WORLD_VIEW = { center: [20, 0], zoom: 2 };
    var FIT_OPTIONS = { maxZoom: 17, padding: [24, 24] };
    // A result is fitted up to this zoom (a ±10 m circle is then ~30 px across its radius),
    // with EDGE px kept free beyond the rings of markers round the prediction.
    var RESULT_MAX_ZOOM = 18;
    var EDGE = 12;
    // Street level and beyond: vectors need no tiles, and tiles are scaled up past their
    // deepest level (maxNativeZoom), so markers a few metres apart can be told apart.
    var MAX_ZOOM = 20;
    var MAX_NATIVE_TILE_ZOOM = 19;
    var MATCH_GAP = 27; // px between the centres of numbered match markers (24 px wide)
    var TRUTH_HALF = 13; // px from the own-GPS diamond's centre to its corners
    // Matches are laid outside the uncertainty circle and the own-GPS mark only while those
    // are small on screen: a larger circle is not hidden by a few markers inside it.
    var MAX_CLEAR = 90;
    // Popups open inside the map: the thumbnail's box is sized before it loads (CSS).
    var POPUP_OPTIONS = { maxWidth: 260, keepInView: true, autoPanPadding: [12, 12] };

    var state = {
        map: null,
        base: null,
        baseFeatures: 0,
        refs: null,
        result: null,
        matches: {},
        prediction: null,
        circle: null,
        truth: null,
        selected: null,
        coverage: null,
        legs: null,
        tiles: null,
        tileConfig: { online: false },
        tileLoads: 0,
        layersControl: null,
        hint: null,
        hintDismissed: false,
        tileError: null,
        tileErrorDismissed: false,
        legend: null,
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
        // world-atlas joins polygons across the antimeridian; cut them for a flat map.
        var fix = window.nvGeo.fixAntimeridian;
        var countries = fix(topojson.feature(topo, topo.objects.countries));
        var borders = fix(topojson.mesh(topo, topo.objects.countries, function (a, b) {
            return a !== b;
        }));
        var coast = fix(topojson.mesh(topo, topo.objects.countries, function (a, b) {
            return a === b;
        }));
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

    function setReferences(list, coverage) {
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
        setCoverage(coverage || { points: markers.map(function (m) {
            var ll = m.getLatLng();
            return [ll.lat, ll.lng];
        }) });
        updateHint();
        refreshLegend();
        return markers.length;
    }

    // Where the library has photos, drawn faintly under everything else: with no tiles it is
    // the only thing at street zoom that says where the streets with photos are. What to
    // draw (tracks, distinct points) is decided by core/mappage.py's reference_coverage.
    function setCoverage(coverage) {
        state.coverage.clearLayers();
        var renderer = state.coverageRenderer;
        var style = { pane: "nvCoverage", renderer: renderer, interactive: false };
        (coverage.tracks || []).forEach(function (track) {
            var line = (track || []).map(function (p) { return toLatLng(p[0], p[1]); })
                .filter(Boolean);
            if (line.length < 2) return;
            L.polyline(line, Object.assign({
                color: "#4a6fa5", weight: 5, opacity: 0.3, lineCap: "round", lineJoin: "round",
            }, style)).addTo(state.coverage);
        });
        (coverage.points || []).forEach(function (p) {
            var ll = toLatLng(p[0], p[1]);
            if (!ll) return;
            L.circleMarker(ll, Object.assign({
                radius: 3, stroke: false, fillColor: "#2c4d7a", fillOpacity: 0.45,
            }, style)).addTo(state.coverage);
        });
    }

    function coverageCount() {
        var out = { points: 0, tracks: 0 };
        state.coverage.eachLayer(function (layer) {
            if (layer instanceof L.CircleMarker) out.points += 1;
            else out.tracks += 1;
        });
        return out;
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
        var head = query.first_guess ? "First guess, being checked: "
            : query.guess ? "Nearest guess, not an answer: " : "Predicted: ";
        box.appendChild(el("div", "nv-title", head + (query.label || "query")));
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
        state.legs.clearLayers();
        state.matches = {};
        state.prediction = null;
        state.circle = null;
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
                state.circle = L.circle(predicted, {
                    radius: radius, color: "#d7301f", weight: 1, fillOpacity: 0.12,
                    interactive: false,
                }).addTo(state.result);
            }
            // A guess (not found in this library, or a first guess still being checked; the
            // engine decides which): drawn grey, never as a prediction.
            state.guess = query.guess === true;
            state.firstGuess = query.first_guess === true;
            var predIcon = L.divIcon({
                className: "", html: wrap(state.guess ? "nv-pred nv-guess" : "nv-pred"),
                iconSize: [22, 22], iconAnchor: [11, 11],
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
            marker.nvTrue = ll; // where the photo was taken; the marker may be moved aside
            marker.bindPopup(function () { return matchPopup(match, rank); }, POPUP_OPTIONS);
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
            // Over the prediction: a photo placed within a metre of its own GPS shows the
            // (smaller) diamond inside the red ring instead of hiding it.
            state.truth = L.marker(truth, { icon: truthIcon, zIndexOffset: 2500 })
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
        fitResult();
        layoutMatches();
        refreshLegend();
        return count();
    }

    // Fit the result with room at the edges for the ring of matches round the prediction
    // (its size depends on the zoom: it goes round the uncertainty circle), so that no marker
    // and no popup is cut off at the map's edge.
    function fitResult() {
        var bounds = resultBounds();
        var map = state.map;
        var size = map.getSize();
        if (!bounds.isValid() || size.x <= 0 || size.y <= 0) return;
        var zoom = RESULT_MAX_ZOOM;
        var pad = EDGE;
        for (var i = 0; i < 5; i++) {
            pad = EDGE + ringReach(zoom);
            var fits = map.getBoundsZoom(bounds, false, L.point(2 * pad, 2 * pad));
            var next = Math.min(fits, RESULT_MAX_ZOOM);
            if (next >= zoom) break;
            zoom = next;
        }
        map.fitBounds(bounds, { padding: [pad, pad], maxZoom: zoom, animate: false });
    }

    // How far (px) the ring of matches round the prediction reaches at a zoom, marker included.
    function ringReach(zoom) {
        var n = Object.keys(state.matches).length;
        if (!state.prediction || !n) return MATCH_GAP / 2;
        return window.nvGeo.ringRadius(n, MATCH_GAP, predictionClear(zoom)) + MATCH_GAP / 2;
    }

    // The radius (px, at a zoom) round the prediction that its ring of matches keeps clear: the
    // uncertainty circle and the own-GPS mark when they are close (0 when nothing needs it).
    function predictionClear(zoom) {
        var map = state.map;
        if (!state.prediction) return 0;
        var centre = map.project(state.prediction.getLatLng(), zoom);
        var clear = 0;
        if (state.circle) {
            var box = state.circle.getBounds();
            var r = (map.project(box.getNorthEast(), zoom).x -
                map.project(box.getSouthWest(), zoom).x) / 2;
            if (r <= MAX_CLEAR) clear = r + MATCH_GAP / 2 + 2;
        }
        if (state.truth) {
            var d = centre.distanceTo(map.project(state.truth.getLatLng(), zoom)) + TRUTH_HALF;
            if (d <= MAX_CLEAR) clear = Math.max(clear, d + MATCH_GAP / 2 + 2);
        }
        return clear;
    }

    // The drawn result's true extent (match markers may sit beside their true positions).
    function resultBounds() {
        var bounds = L.latLngBounds([]);
        state.result.eachLayer(function (layer) {
            if (layer.nvTrue) bounds.extend(layer.nvTrue);
            else if (layer.getBounds) bounds.extend(layer.getBounds());
            else if (layer.getLatLng) bounds.extend(layer.getLatLng());
        });
        return bounds;
    }

    // Numbered matches that would cover each other (or the predicted pin) at this zoom are
    // laid round it on a circle, each with a thin leg to the spot where its photo was taken.
    function layoutMatches() {
        state.legs.clearLayers();
        var map = state.map;
        var ranks = Object.keys(state.matches).map(Number).sort(function (a, b) {
            return a - b;
        });
        if (!ranks.length) return;
        var points = ranks.map(function (rank) {
            return map.latLngToLayerPoint(state.matches[rank].nvTrue);
        });
        // The prediction's ring keeps clear of its circle and of the own-GPS mark beside it.
        var anchors = [];
        if (state.prediction) {
            var pred = map.latLngToLayerPoint(state.prediction.getLatLng());
            anchors.push({ x: pred.x, y: pred.y, clear: predictionClear(map.getZoom()) });
        }
        if (state.truth) {
            var own = map.latLngToLayerPoint(state.truth.getLatLng());
            anchors.push({ x: own.x, y: own.y, clear: 0 });
        }
        var spread = window.nvGeo.spread(points, anchors, MATCH_GAP);
        ranks.forEach(function (rank, i) {
            var marker = state.matches[rank];
            var p = spread[i];
            if (Math.abs(p.x - points[i].x) < 0.5 && Math.abs(p.y - points[i].y) < 0.5) {
                marker.setLatLng(marker.nvTrue);
                return;
            }
            var moved = map.layerPointToLatLng(L.point(p.x, p.y));
            marker.setLatLng(moved);
            L.polyline([marker.nvTrue, moved], {
                color: "#1f5fbf", weight: 1.5, opacity: 0.9, interactive: false,
            }).addTo(state.legs);
            L.circleMarker(marker.nvTrue, {
                radius: 3, color: "#1f5fbf", weight: 1.5, fillColor: "#fff", fillOpacity: 1,
                interactive: false,
            }).addTo(state.legs);
        });
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
        if (options && options.references) {
            // Another library: nothing of the old one may keep the view (fitAll follows
            // once its photos are known).
            state.refs.clearLayers();
            state.coverage.clearLayers();
            state.map.setView(WORLD_VIEW.center, WORLD_VIEW.zoom, { animate: false });
            updateHint();
        }
        refreshLegend();
        return count();
    }

    function fitAll() {
        var bounds = resultBounds();
        if (state.refs.getLayers().length) bounds.extend(state.refs.getBounds());
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
            coverage: coverageCount(),
            spread: state.legs.getLayers().length / 2,
            tiles: !!state.tiles,
        };
    }

    // ---- tiles, notices and legend (the controls themselves: nvcontrols.js) ----------------

    var controls = window.nvControls;
    var show = controls.show;

    function useOnlineTiles() {
        var bridge = window.nvBridge;
        if (!bridge || typeof bridge.useOnlineTiles !== "function") return false;
        bridge.useOnlineTiles();
        return true;
    }

    function updateHint() {
        show(state.hint, !state.tiles && !state.hintDismissed);
        state.hint.nvCoverageText.style.display = state.coverage.getLayers().length ? "" : "none";
    }

    function onTileError() {
        // One missing tile among loaded ones is the server's business; none loading is ours.
        if (state.tileLoads > 0 || state.tileErrorDismissed) return;
        state.tileError.nvText.textContent =
            "Map tiles could not be loaded from " + controls.tileHost(state.tileConfig.url) +
            " (no network, or the server refused). Showing the offline map.";
        show(state.tileError, true);
    }

    function setTiles(config) {
        config = config || {};
        if (state.tiles) state.map.removeLayer(state.tiles);
        if (state.layersControl) state.layersControl.remove();
        state.tiles = null;
        state.layersControl = null;
        state.tileLoads = 0;
        state.tileErrorDismissed = false;
        state.tileConfig = { online: false };
        show(state.tileError, false);
        if (config.online && config.url) {
            state.tileConfig = { online: true, url: String(config.url) };
            // The browser engine sends the app's User-Agent (set on the Qt profile) with each tile.
            var tiles = L.tileLayer(String(config.url), {
                attribution: config.attribution || "",
                maxNativeZoom: MAX_NATIVE_TILE_ZOOM,
                maxZoom: MAX_ZOOM,
            });
            tiles.on("tileload", function () {
                if (tiles !== state.tiles) return; // a late answer for a replaced layer
                state.tileLoads += 1;
                show(state.tileError, false);
            });
            tiles.on("tileerror", function () {
                if (tiles === state.tiles) onTileError();
            });
            state.tiles = tiles.addTo(state.map);
            var overlays = {};
            if (state.base) overlays["Offline outline map"] = state.base;
            overlays["Online map tiles"] = state.tiles;
            state.layersControl = L.control.layers(null, overlays, { collapsed: true })
                .addTo(state.map);
        }
        updateHint();
        return { online: !!state.tiles };
    }

    function legendKinds() {
        var kinds = [];
        var clusters = 0;
        var singles = 0;
        var refs = state.refs.getLayers();
        for (var i = 0; i < refs.length && !(clusters && singles); i++) {
            var parent = state.refs.getVisibleParent(refs[i]);
            if (!parent) continue;
            if (parent === refs[i]) singles += 1;
            else clusters += 1;
        }
        if (state.prediction) {
            kinds.push(state.firstGuess ? "first_guess" : state.guess ? "guess" : "prediction");
        }
        if (Object.keys(state.matches).length) kinds.push("match");
        if (state.legs.getLayers().length) kinds.push("spread");
        if (state.truth) kinds.push("truth");
        if (clusters) kinds.push("cluster");
        if (singles) kinds.push("reference");
        if (state.coverage.getLayers().length) kinds.push("coverage");
        return kinds;
    }

    function refreshLegend() {
        if (state.legend) state.legend.setKinds(legendKinds());
    }

    function ui() {
        var visible = controls.visible;
        return {
            hint: visible(state.hint),
            tileError: visible(state.tileError) ? state.tileError.nvText.textContent : null,
            legend: visible(state.legend) ? legendKinds() : [],
            legendCollapsed: state.legend.collapsed(),
            zoom: state.map.getZoom(),
            maxZoom: state.map.getMaxZoom(),
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
        map.setMaxZoom(MAX_ZOOM);
        state.base = drawBase(map, window.nvWorld);
        var coveragePane = map.createPane("nvCoverage");
        coveragePane.style.zIndex = 350; // over tiles (200), under legs (400) and markers (600)
        coveragePane.style.pointerEvents = "none";
        state.coverageRenderer = L.canvas({ pane: "nvCoverage", padding: 0.5 });
        state.coverage = L.layerGroup().addTo(map);
        state.legs = L.layerGroup().addTo(map);
        state.refs = L.markerClusterGroup({
            // One synchronous add: the page has its own renderer process, so a big library
            // stalls only the map for a moment, and counts are exact when setReferences returns.
            chunkedLoading: false,
            showCoverageOnHover: false,
            // Near street level only photos that really cover each other stay grouped; at the
            // deepest zoom a click on such a group spreads it out (spiderfy).
            maxClusterRadius: function (zoom) { return zoom >= 16 ? 6 : 40; },
            spiderfyOnMaxZoom: true,
        }).addTo(map);
        state.refs.on("animationend", refreshLegend);
        state.result = L.featureGroup().addTo(map);
        state.hint = controls.hint(map, useOnlineTiles, function () {
            state.hintDismissed = true;
        });
        state.tileError = controls.tileError(map, function () {
            state.tileErrorDismissed = true; // until the tile setting changes
        });
        state.legend = controls.legend(map);
        state.legend.fitTo(map.getSize());
        map.on("resize", function (e) { state.legend.fitTo(e.newSize); });
        setTiles(config.tiles_online ? {
            online: true, url: config.tile_url, attribution: config.attribution,
        } : { online: false });
        map.on("zoomend", function () {
            layoutMatches();
            refreshLegend();
        });
        refreshLegend();
        window.nv = {
            setReferences: setReferences,
            showResult: showResult,
            select: select,
            clear: clear,
            fitAll: fitAll,
            count: count,
            setTiles: setTiles,
            ui: ui,
            // For tests and debugging: the live Leaflet objects.
            matchMarker: function (rank) { return state.matches[rank] || null; },
            layers: function () {
                return {
                    map: state.map, base: state.base, references: state.refs,
                    result: state.result, prediction: state.prediction, truth: state.truth,
                    coverage: state.coverage, legs: state.legs, tiles: state.tiles,
                };
            },
        };
        window.nvReady = true;
        connectBridge();
    }

    window.nvInit = init;
})();
