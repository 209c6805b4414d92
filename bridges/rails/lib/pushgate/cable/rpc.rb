# frozen_string_literal: true

require "json"
require "stringio"
require "uri"
require "rack"
require "action_cable"
require "action_dispatch/middleware/cookies"
require "pushgate/cable/rpc/wire"
require "pushgate/cable/rpc/socket"
require "pushgate/cable/action_cable_hooks"
require "pushgate/cable/socket_id"

module Pushgate
  module Cable
    # The Rails side of the gateway's Action Cable RPC: a Rack endpoint that
    # answers AnyCable's RPC over HTTP (POST /connect, /command, /disconnect)
    # by running the app's own ApplicationCable::Connection and channel
    # classes, as Action Cable's server runs them, with a socket that records
    # what they transmit and stream instead of holding a WebSocket.
    #
    #   # config/routes.rb
    #   mount Pushgate::Cable::RPC.new(secret: ENV.fetch("PUSHGATE_CABLE_RPC_SECRET")) => "/_pushgate"
    #
    #   pushgate serve --cable-rpc-url=http://127.0.0.1:3000/_pushgate \
    #                  --cable-rpc-secret="$PUSHGATE_CABLE_RPC_SECRET"
    #
    # The gateway owns the sockets and streams; each call builds the
    # connection from the browser's upgrade request (URL and the headers the
    # gateway passes, the Cookie among them), restores what earlier calls
    # kept (identifiers, cstate, the subscription's istate) and answers what
    # the app did: the frames to send (welcome, confirm_subscription,
    # reject_subscription, disconnect, transmit), the streams started and
    # stopped, state changes, presence.
    class RPC
      COMMANDS = %w[subscribe unsubscribe message].freeze
      # No call of the gateway's comes near it (a connect's cookies, a
      # disconnect's subscriptions); a bigger body is refused unread.
      MAX_BODY_BYTES = 1024 * 1024
      JSON_HEADERS = { "Content-Type" => "application/json" }.freeze

      # +secret+: the gateway's --cable-rpc-secret; calls without
      # "Authorization: Bearer <secret>" get 401. Required: the endpoint runs
      # the app's connection code for whoever calls it.
      # +connection_class+: default ActionCable's (ApplicationCable::Connection).
      # +server+: the Action Cable server whose config (origins, logger) applies.
      # +middleware+: more Rack middleware the upgrade request passes before
      # the connection sees it, as it would pass Rails' stack, after the
      # app's session store (always there, so request.session works): each
      # [klass, *args] or [klass, *args, block], e.g. Warden's for Devise.
      def initialize(secret:, connection_class: nil, server: nil, middleware: nil, env_config: nil)
        raise ArgumentError, "Pushgate::Cable::RPC needs the gateway's --cable-rpc-secret" if secret.nil? || secret.empty?

        @authorization = "Bearer #{secret}"
        @connection_class = connection_class
        @server = server
        @middleware = middleware
        @env_config = env_config
        @readers = {}
        @lock = Mutex.new
      end

      def call(rack_env)
        return plain(405, "POST only") unless rack_env["REQUEST_METHOD"] == "POST"
        unless Rack::Utils.secure_compare(rack_env["HTTP_AUTHORIZATION"].to_s, @authorization)
          return plain(401, "Unauthorized")
        end

        call_name = rack_env["PATH_INFO"].to_s.delete_prefix("/")
        return plain(404, "Not found: the calls are /connect, /command and /disconnect") unless
          %w[connect command disconnect].include?(call_name)

        return plain(413, "a call's body is at most #{MAX_BODY_BYTES} bytes") if
          rack_env["CONTENT_LENGTH"].to_i > MAX_BODY_BYTES
        body = rack_env["rack.input"]&.read(MAX_BODY_BYTES + 1)
        return plain(413, "a call's body is at most #{MAX_BODY_BYTES} bytes") if body && body.bytesize > MAX_BODY_BYTES

        request = parse(body)
        return plain(422, "the body must be a JSON object (AnyCable's #{call_name} request)") unless request

        sid = rack_env["HTTP_X_ANYCABLE_META_SID"]
        # "call.pushgate_cable_rpc" (call: connect/command/disconnect,
        # command: subscribe/unsubscribe/message): the time the app's code
        # took, for the app's own metrics.
        body = ActiveSupport::Notifications.instrument("call.pushgate_cable_rpc",
                                                       call: call_name, command: request["command"]) do
          as_an_execution do
            case call_name
            when "connect" then connect(request, sid)
            when "command" then Cable.with_socket_id(sid) { command(request, sid) }
            else disconnect(request, sid)
            end
          end
        end
        [200, JSON_HEADERS.dup, [body]]
      end

      private

      # Inside Rails' executor (database connections returned, code reloaded
      # in development), as a request to Rails is: already so when mounted in
      # the routes, and so also when mounted in front of the app in config.ru.
      def as_an_execution(&block)
        defined?(::Rails.application) && ::Rails.application ? ::Rails.application.executor.wrap(&block) : yield
      end

      def parse(body)
        return nil unless body.is_a?(String) && !body.empty?

        request = JSON.parse(body)
        request.is_a?(Hash) ? request : nil
      rescue JSON::ParserError
        nil
      end

      # ConnectionRequest {env} → ConnectionResponse: what Action Cable's
      # Connection#process and #handle_open do, the origin check first.
      def connect(request, sid)
        env = request["env"].is_a?(Hash) ? request["env"] : {}
        socket = Socket.new(cstate: env["cstate"])
        connection = build_connection(env, socket, sid: sid)
        connection.send(:respond_to_invalid_request) if connection.env["HTTP_ORIGIN"] && !connection.send(:allow_request_origin?)
        connection.send(:handle_open) if socket.alive?
        if socket.closed?
          Wire.connection_response(status: Wire::FAILURE, transmissions: socket.transmissions)
        else
          Wire.connection_response(status: Wire::SUCCESS, identifiers: identifiers_json(connection),
                                   transmissions: socket.transmissions, env: { cstate: socket.cstate.changes })
        end
      rescue Exception => e # rubocop:disable Lint/RescueException -- the app's exception becomes the ERROR answer
        raise if fatal?(e)

        Wire.connection_response(status: Wire::ERROR, error_msg: failed(connection, "connect", e))
      end

      # CommandMessage → CommandResponse: Subscriptions#add / #remove /
      # #perform_action on a connection restored from its identifiers.
      def command(request, sid)
        env = request["env"].is_a?(Hash) ? request["env"] : {}
        identifier = request["identifier"].to_s
        command = request["command"].to_s
        unless COMMANDS.include?(command)
          return Wire.command_response(status: Wire::ERROR, error_msg: "unknown command #{command.inspect}")
        end

        socket = Socket.new(cstate: env["cstate"], istate: env["istate"])
        connection = build_connection(env, socket, sid: sid, identifiers: request["connection_identifiers"])
        subscriptions = connection.subscriptions
        status = Wire::SUCCESS
        case command
        when "subscribe"
          unless channel_class(identifier)
            return unknown_channel(connection, identifier, socket)
          end

          subscriptions.add("command" => command, "identifier" => identifier)
          status = Wire::FAILURE unless subscriptions.identifiers.include?(identifier)
        when "unsubscribe"
          return unknown_channel(connection, identifier, socket) unless load_channel(connection, identifier)

          subscriptions.remove("command" => command, "identifier" => identifier)
        when "message"
          return unknown_channel(connection, identifier, socket) unless load_channel(connection, identifier)

          subscriptions.perform_action("command" => command, "identifier" => identifier,
                                       "data" => request["data"].to_s)
        end
        command_answer(status, socket)
      rescue Exception => e # rubocop:disable Lint/RescueException
        raise if fatal?(e)

        connection.rescue_with_handler(e) if connection
        Wire.command_response(status: Wire::ERROR, error_msg: failed(connection, command, e))
      end

      # DisconnectRequest → DisconnectResponse: Connection#handle_close, so
      # every subscription's unsubscribed and the connection's disconnect run.
      def disconnect(request, sid)
        env = request["env"].is_a?(Hash) ? request["env"] : {}
        socket = Socket.new(cstate: env["cstate"])
        connection = build_connection(env, socket, sid: sid, identifiers: request["identifiers"])
        istates = env["istate"].is_a?(Hash) ? env["istate"] : {}
        Array(request["subscriptions"]).each do |identifier|
          channel = load_channel(connection, identifier.to_s)
          if channel.nil?
            connection.logger.error "pushgate RPC disconnect: no channel class for #{identifier}, its unsubscribed is not run"
            next
          end
          channel.pushgate_istate = State.new(parse(istates[identifier]) || {})
        end
        connection.send(:handle_close)
        Wire.disconnect_response(status: Wire::SUCCESS)
      rescue Exception => e # rubocop:disable Lint/RescueException
        raise if fatal?(e)

        Wire.disconnect_response(status: Wire::ERROR, error_msg: failed(connection, "disconnect", e))
      end

      def command_answer(status, socket)
        Wire.command_response(status: status, disconnect: socket.closed?, stop_streams: socket.stop_all_streams?,
                              streams: socket.started, transmissions: socket.transmissions,
                              env: { cstate: socket.cstate.changes, istate: socket.istate.changes },
                              stopped_streams: socket.stopped, presence: socket.presence)
      end

      # A subscription to a class the app does not have: Action Cable logs it
      # and answers nothing (the client would wait); this answers
      # reject_subscription, so the client knows.
      def unknown_channel(connection, identifier, socket)
        message = "no channel class for identifier #{identifier}"
        connection.logger.error "pushgate RPC: #{message}"
        socket.transmit(ActiveSupport::JSON.encode(identifier: identifier,
                                                   type: ActionCable::INTERNAL[:message_types][:rejection]))
        Wire.command_response(status: Wire::FAILURE, transmissions: socket.transmissions, error_msg: message)
      end

      # The channel object of an existing subscription (unsubscribe, message,
      # disconnect), built as Subscriptions#add builds it, without running
      # `subscribed` again.
      def load_channel(connection, identifier)
        klass = channel_class(identifier) or return nil
        params = ActiveSupport::JSON.decode(identifier).with_indifferent_access
        channel = klass.new(connection, identifier, params)
        connection.subscriptions.instance_variable_get(:@subscriptions)[identifier] = channel
        channel
      end

      # What Subscriptions#add accepts: a Channel::Base subclass named by the
      # identifier's "channel".
      def channel_class(identifier)
        params = ActiveSupport::JSON.decode(identifier)
        return nil unless params.is_a?(Hash)

        klass = params["channel"].to_s.safe_constantize
        klass if klass.is_a?(Class) && klass < ActionCable::Channel::Base
      rescue JSON::ParserError
        nil
      end

      # The app's connection class, built as Action Cable's server builds it,
      # with the call's socket for a WebSocket and a server whose pubsub and
      # event loop are that socket too.
      def build_connection(env, socket, sid:, identifiers: nil)
        server = CallServer.new(action_cable_server, socket)
        klass = @connection_class || action_cable_server.config.connection_class.call
        connection = klass.new(server, rack_env(env, sid))
        connection.instance_variable_set(:@websocket, socket)
        connection.instance_variable_set(:@pushgate_socket, socket)
        connection.instance_variable_set(:@pushgate_sid, sid)
        if identifiers && !identifiers.empty?
          restore_identifiers(connection, klass, identifiers)
        end
        connection
      end

      # Identifiers come back as the JSON object connect answered; each is
      # loaded (a record by its GlobalID) the first time the code reads it.
      def restore_identifiers(connection, klass, identifiers)
        serialized = parse(identifiers) or raise ArgumentError, "connection_identifiers is not a JSON object"
        connection.instance_variable_set(:@pushgate_serialized_ids, serialized)
        readers_for(klass)
      end

      def readers_for(klass)
        @lock.synchronize do
          @readers[klass] ||= begin
            readers = Module.new do
              klass.identifiers.each do |name|
                define_method(name) do
                  ivar = :"@#{name}"
                  serialized = @pushgate_serialized_ids
                  if serialized && !instance_variable_defined?(ivar) && serialized.key?(name.to_s)
                    instance_variable_set(ivar, Serializer.load(serialized[name.to_s]))
                  end
                  super()
                end
              end
            end
            klass.prepend(readers)
            readers
          end
        end
      end

      def identifiers_json(connection)
        ids = connection.identifiers.each_with_object({}) do |name, out|
          value = connection.instance_variable_get(:"@#{name}")
          out[name.to_s] = Serializer.dump(value) unless value.nil?
        end
        JSON.generate(ids)
      end

      # The Rack env of the browser's upgrade request, as AnyCable builds it:
      # the URL's parts, the headers the gateway passed (lowercase names) as
      # HTTP_*, the peer's address, then the app's env config (cookie keys)
      # and middleware (the session).
      def rack_env(env, sid)
        uri = begin
          URI.parse(env["url"].to_s)
        rescue URI::InvalidURIError
          URI.parse("/")
        end
        headers = env["headers"].is_a?(Hash) ? env["headers"].dup : {}
        remote_addr = headers.delete("REMOTE_ADDR") || headers.delete("remote_addr")
        rack = {
          "REQUEST_METHOD" => "GET", "SCRIPT_NAME" => "", "PATH_INFO" => uri.path.to_s.empty? ? "/" : uri.path,
          "QUERY_STRING" => uri.query.to_s, "SERVER_NAME" => uri.host.to_s, "SERVER_PORT" => (uri.port || 80).to_s,
          "SERVER_PROTOCOL" => "HTTP/1.1", "REMOTE_ADDR" => remote_addr, "HTTP_HOST" => uri.host.to_s,
          "rack.url_scheme" => uri.scheme.to_s.sub(/\Aws/, "http").then { |s| s.empty? ? "http" : s },
          "rack.input" => StringIO.new(+""), "rack.errors" => $stderr, "rack.version" => Rack::VERSION,
          "rack.multithread" => true, "rack.multiprocess" => false, "rack.run_once" => false,
          "rack.hijack?" => false, "pushgate.sid" => sid
        }.compact
        rack["HTTP_HOST"] = "#{uri.host}:#{uri.port}" if uri.host && uri.port && uri.port != uri.default_port
        headers.each { |name, value| rack["HTTP_#{name.to_s.upcase.tr('-', '_')}"] = value.to_s }
        rack.merge!(@env_config) if @env_config
        rack = rails_env_config.merge(rack) if rails_env_config
        run_middleware(rack)
        rack
      end

      def rails_env_config
        defined?(::Rails.application) && ::Rails.application ? ::Rails.application.env_config : nil
      end

      # Runs the upgrade request through the middleware (the session store),
      # which fill in its env as they would in front of Action Cable.
      def run_middleware(rack)
        app = middleware_app
        app&.call(rack)
      end

      def middleware_app
        return @middleware_app if defined?(@middleware_app)

        @lock.synchronize do
          return @middleware_app if defined?(@middleware_app)

          stack = session_middleware + Array(@middleware)
          endpoint = ->(_env) { [200, {}, []] }
          @middleware_app = stack.empty? ? nil : stack.reverse.inject(endpoint) do |app, (klass, *args)|
            block = args.last.is_a?(Proc) ? args.pop : nil
            klass.new(app, *args, &block)
          end
        end
      end

      def session_middleware
        return [] unless defined?(::Rails.application) && ::Rails.application

        config = ::Rails.application.config
        store = config.session_store
        store ? [[store, config.session_options || {}]] : []
      end

      def action_cable_server
        @server || ::ActionCable.server
      end

      def failed(connection, call, error)
        message = "#{error.class}: #{error.message}"
        logger = connection&.logger || action_cable_server.config.logger
        logger&.error "pushgate RPC #{call} failed: #{message} (#{error.backtrace&.first})"
        message
      end

      def fatal?(error)
        error.is_a?(NoMemoryError) || error.is_a?(SignalException) || error.is_a?(SystemExit)
      end

      def plain(status, text)
        [status, { "Content-Type" => "text/plain" }, [text]]
      end

      # The Action Cable server a connection built by the RPC sees: the app's
      # config and logger, the call's socket as pubsub, and an event loop that
      # runs what is posted at once (the stream is recorded, not opened).
      class CallServer
        attr_reader :pubsub

        def initialize(server, socket)
          @server = server
          @pubsub = socket
        end

        def config = @server.config
        def logger = @server.logger
        def worker_pool = nil
        def event_loop = ImmediateLoop
        def add_connection(_connection) = nil
        def remove_connection(_connection) = nil
        def remote_connections = @server.remote_connections
        def broadcast(*args, **options) = @server.broadcast(*args, **options)
      end

      module ImmediateLoop
        module_function

        def post(task = nil, &block)
          (task || block).call
        end

        def timer(_interval, &_block) = nil
      end
    end
  end
end
