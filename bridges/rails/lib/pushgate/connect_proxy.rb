# frozen_string_literal: true

require "json"
require "rack/request"

module Pushgate
  # A Rack endpoint that answers the gateway's connect proxy (Centrifugo's
  # HTTP proxy JSON) from the Rails session: the signed-in user's id is the
  # connection's user, so a Rails app's Centrifugo-protocol clients need no
  # token endpoint. The gateway passes the browser's Cookie header
  # (--proxy-headers=cookie), and Rails' session middleware, which runs
  # before a mounted Rack app, reads the session from it.
  #
  #   # config/routes.rb
  #   post "/centrifugo/connect", to: Pushgate::ConnectProxy.new
  #   # or, to say who the user is yourself (Devise/Warden, ...):
  #   post "/centrifugo/connect", to: Pushgate::ConnectProxy.new { |request|
  #     request.env["warden"]&.user&.id
  #   }
  #
  #   pushgate serve --connect-proxy-url=https://app.example.com/centrifugo/connect \
  #                  --proxy-headers=cookie --allowed-origins=https://app.example.com
  #
  # The answer is {"result": {"user": "<id>"}} (with "expire_at" when
  # +ttl:+ is given, and "info" from +info:+), or {"disconnect": {"code":
  # 4501, "reason": "unauthorized"}} when nobody is signed in (the client
  # does not reconnect). Only POST with a JSON object is answered; anything
  # else is 400/405.
  class ConnectProxy
    UNAUTHORIZED = { "disconnect" => { "code" => 4501, "reason" => "unauthorized" } }.freeze

    # +user+: a block (the Rack::Request in) returning the user's id, or nil.
    # By default session["user_id"] (what `session[:user_id] = user.id` sets),
    # then Warden's user (Devise) when there is one.
    def initialize(ttl: nil, info: nil, &user)
      @ttl = ttl
      @info = info
      @user = user || method(:session_user)
    end

    def call(env)
      request = Rack::Request.new(env)
      return answer(405, { "error" => "POST only" }) unless request.post?

      body = begin
        JSON.parse(request.body.read)
      rescue JSON::ParserError
        nil
      end
      return answer(400, { "error" => "the body must be a proxy request (a JSON object)" }) unless body.is_a?(Hash)

      user = @user.call(request)
      return answer(200, UNAUTHORIZED) if user.nil? || user.to_s.empty?

      result = { "user" => user.to_s }
      result["expire_at"] = Time.now.to_i + @ttl if @ttl
      info = @info.respond_to?(:call) ? @info.call(request, user) : @info
      result["info"] = info unless info.nil?
      answer(200, { "result" => result })
    end

    private

    def session_user(request)
      session = request.env["rack.session"]
      id = session && (session["user_id"] || session[:user_id])
      return id if id

      warden = request.env["warden"]
      warden&.user&.id
    end

    def answer(status, body)
      [status, { "Content-Type" => "application/json" }, [JSON.generate(body)]]
    end
  end
end
