# frozen_string_literal: true

class ApplicationController < ActionController::Base
  # A request carrying X-Socket-ID (the gateway connection id a page got in
  # its welcome: @anycable/web's cable.sessionId, which the page attaches to
  # its fetch requests) makes that id the current socket: broadcasts made
  # with to_others: true while the request runs skip that connection.
  include Pushgate::Cable::SocketId
end
